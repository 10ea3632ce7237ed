"""The five tipline services. Each imports shared code, never another service."""
