"""silhouette.privacy: attacks that measure what an adversary can still learn from obfuscated frames.

- `reconstruction`: a fresh, larger U-Net learns obfuscated -> original (PSNR/SSIM on the test split).
- `faces`: Haar / MTCNN face detectors; fraction of clean-frame faces found again.
- `reid`: person re-identification (rank-1, mAP vs chance), clean-trained and adaptive attackers.
- `scorecard`: utility beside attack success, markdown + JSON + trade-off plot.
- `attack_suite` / `cli`: `silhouette attack` (builds each method, runs the attacks, caches, writes the scorecard).
"""
