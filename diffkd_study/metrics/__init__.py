"""Generic statistics, computation only (no plotting): ROC/DeLong, calibration, decision curves, operating points,
FROC, FID/KID, efficiency and result tables; every function with published or hand-computed expected values in its test."""
