"""forge serving: OpenAI-compatible chat over llama-cpp-python with zero-downtime hot reload."""
