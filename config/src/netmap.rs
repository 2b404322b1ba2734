//! Wire types the control plane sends to agents: the netmap and its peers (being written).
