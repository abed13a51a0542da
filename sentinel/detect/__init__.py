"""Detection: per-stream adaptive thresholds on the reconstruction error, and calibrated scores."""
