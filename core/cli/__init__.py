"""The command line, one module per group of commands; core/__main__.py puts them together."""
