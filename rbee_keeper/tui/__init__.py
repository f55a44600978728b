"""`rbee-keeper dashboard`: the fleet, live, in the terminal (Textual)."""
