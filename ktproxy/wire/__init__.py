"""Wire formats: request/response shapes and the SSE framing."""
