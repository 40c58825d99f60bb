"""The decoder-only transformer, its fused loss, decoding, and loading trained weights (pure torch)."""
