"""Datasets: the built-in digits, standard sets read in place, image and CSV folders, uploads; decoding
images safely, batching, augmentation on the device, and the Datasets page's view of them."""
