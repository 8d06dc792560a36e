"""Privacy accounting: GDP conversions, per-user ledger on Opacus accountants, exact accounting of the quantizer."""
