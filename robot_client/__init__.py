"""Robot client: runs on the deploy machine; talks to the policy server and drives the arms."""
