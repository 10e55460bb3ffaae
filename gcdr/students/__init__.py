"""Stage 3: the students, VAT (Chong et al. 2020) and Gaze-LLE (Ryan et al. 2025)."""
