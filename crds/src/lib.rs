//! placeholder: written by the crds work
