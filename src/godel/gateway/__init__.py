"""The LLM gateway: /proxy/v1 in front of the configured providers."""
