"""The camera side: obfuscator runtimes, ONNX/int8 export, the obfuscate pipeline and the HTTP client.

Runs without torch: the shipped obfuscator also ships as ONNX, and torch is imported only for a .pt checkpoint,
`--backend torch` or `silhouette export`. Never imports `silhouette.serve`: the two meet in `silhouette.wire` (the
protocol) and `silhouette.imaging` (the frame bytes).
"""
