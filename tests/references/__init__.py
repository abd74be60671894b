"""NumPy transcriptions of each optimizer's published update rule, one module per method."""
