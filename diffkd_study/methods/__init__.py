"""What only one method uses, one package per method: :mod:`~diffkd_study.methods.diffkd` (DiffKD-DCIS),
:mod:`~diffkd_study.methods.ssdkd` (SSD-KD) and :mod:`~diffkd_study.methods.comoto` (CoMoTo)."""
