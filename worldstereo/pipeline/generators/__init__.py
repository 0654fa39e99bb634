"""Video generators: ``oracle`` (ground-truth upper bound), ``warp`` (weight-free baseline), ``worldstereo``."""
