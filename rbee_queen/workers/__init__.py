"""Workers: their states, starting one, relaying its tokens, stopping it,
recovering it when it fails, and re-adopting it after a queen restart."""
