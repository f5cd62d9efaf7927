"""int8 arithmetic: weight grids, bias correction, equalization and SmoothQuant scales, GPTQ rows, layer statistics and the least-squares refit."""
