"""Drop-in replacements for the original MInt external-computing scripts.

Existing MInt modules call the original entry points with their own argument forms; these
modules accept exactly those forms and run the job on mint-bridge's paths instead.
"""
