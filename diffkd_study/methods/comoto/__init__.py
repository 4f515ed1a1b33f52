"""Lesion detection and CoMoTo (cross-modal lesion distillation, arXiv 2407.17620).

``stage`` (no torch import: the runner reads it) holds the stage's parameters and the method table;
``data`` loads detection manifests (letterboxed, cached); ``train`` trains a detector with the
detection loss and the optional ImPA / LsKD / image-level KD terms; ``cv`` runs the teachers and the
patient-grouped cross-validation of every method and data regime; ``report`` draws its figures and
tables. Import the submodules directly: this package imports nothing heavy.
"""
