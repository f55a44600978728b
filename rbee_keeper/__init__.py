"""rbee-keeper: the command line. It talks to the queen over HTTP only."""
