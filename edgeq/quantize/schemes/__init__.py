"""Quantization schemes, one folder each; importing a folder registers its handler."""
