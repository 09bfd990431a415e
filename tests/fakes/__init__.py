"""Local stand-ins that speak real wire protocols, for boundaries that cannot run here."""
