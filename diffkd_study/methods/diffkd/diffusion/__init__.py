"""DiffKD-DCIS stage 1: the conditional diffusion model (``unet``, ``conditioning``), its training (``train``),
sampling (``sample``), synthetic-image quality (``quality``), real + synthetic mixing (``augment``), figures
(``plots``), the stage sections (``stage``) and the stage runner (``workflow``)."""
