"""Pure numpy: codecs, weight-only and int8 algorithms, the byte-budget allocation.

Nothing here knows about ONNX graphs; every function takes and returns arrays and is tested
against a float64 reference.
"""
