"""Provider adapters, pooled upstream connections and the model router."""
