"""Supplementation: works out each report's jurisdiction and priority before referral."""
