// Anchors the precompiled LibTorch header that every pipeline library reuses.
