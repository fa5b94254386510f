"""Provider adapters, pooled upstream sessions and the model router."""
