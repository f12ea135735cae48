"""Tenants: the domain data (tenants, weights, API keys, plans, audit) and its HTTP surfaces."""
