"""What every tipline service shares: event contracts, topic names, settings and plumbing."""
