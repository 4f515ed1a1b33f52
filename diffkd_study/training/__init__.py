"""The generic training layer: one trainer (resume, early stopping, mid-epoch checkpoints, DDP), batch augmentation,
in-memory image tensors and epoch plans, class weights, and the named presets the stage sections check."""
