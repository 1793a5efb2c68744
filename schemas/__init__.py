"""Canonical field definitions, agency onboarding mappings, encoding spec, protocols."""
