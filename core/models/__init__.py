"""Models: the registry (how each is built, its head, embedding and feature layers), the networks,
ImageNet weights, and the Model page's inspection (layer table, weight statistics)."""
