"""The `explorer` command line: parsing and printing only; the work lives in the packages beside it."""
