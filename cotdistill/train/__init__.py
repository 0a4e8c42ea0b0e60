"""Stage 3: distill the student (SFT, GKD, on-policy distillation, cached-logit KD)."""
