// What selection needs to cost a plan (hub.cost.cost_of): each listed model's recorded cost
// per image, or the weights' size and input size its estimate is made from.
UNWIND $ids AS id
MATCH (m:Model {id: id})
RETURN m.id AS id, m.cost_ms_per_image AS cost_ms_per_image, m.cost_device AS cost_device,
       m.cost_threads AS cost_threads, m.size_bytes AS size_bytes, m.input_size AS input_size
