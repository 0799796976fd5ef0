"""Host side of the kernel-initiator tests: a QEMU guest with open-iscsi against the agent."""
