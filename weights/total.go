package weights

// TotalBytes sums the byte sizes of tensors.
func TotalBytes(infos []TensorInfo) int64 {
	var n int64
	for _, t := range infos {
		b, _ := t.ByteSize()
		n += b
	}
	return n
}
