"""The templates Nexus renders. Installed as package data of `nexus.templates`, so a wheel
renders exactly like a checkout (generator/render/context.py finds them through this module)."""
