"""The tally command line: parse, call one cas function, render. No logic lives here."""
