"""Retraction: marks reports retracted and corrects every agency that received them."""
