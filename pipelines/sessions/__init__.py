"""Session models: public sequences → the sessions layout, sequence batches, M2TRec / SASRec /
GRU4Rec training under DDP, next-item evaluation over the whole catalogue."""
