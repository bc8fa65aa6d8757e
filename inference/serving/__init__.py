"""Serving layer: OpenAI request -> engine -> OpenAI response. Routes stay thin."""
