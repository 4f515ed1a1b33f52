"""SSD-KD reproduction on dermoscopy (HAM10000): stage parameters, tasks, SS head, metrics, orchestration.

Light on import: only :mod:`diffkd_study.methods.ssdkd.stage` is imported by the study config (no torch).
"""
