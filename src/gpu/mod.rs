//! NVIDIA GPU injection as plain spec edits: discover, request, edits, CDI, leases.
