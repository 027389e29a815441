"""The finding rules, one module per family: E (the plan cannot be understood),
H1 (data loss), H2 (consistency and order), H3 (operations), P (preflight).
`mdsl.check.catalog` lists them in order."""
