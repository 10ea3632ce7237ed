"""Referral: sends each report to the agencies that must receive it and keeps the ledger."""
