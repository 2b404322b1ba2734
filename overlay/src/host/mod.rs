//! Host networking through rtnetlink (being written).
