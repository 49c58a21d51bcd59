package weights

import (
	"strings"
	"testing"
)

// TestCreateRefusesEmptyPath: an empty output path is refused as such, not
// as a failed mkdir of "".
func TestCreateRefusesEmptyPath(t *testing.T) {
	infos := []TensorInfo{{Name: "w", DType: F32, Shape: []int64{1}}}
	if _, err := CreateSafetensors("", infos, nil); err == nil || !strings.Contains(err.Error(), "no output path") {
		t.Errorf("CreateSafetensors(\"\"): %v", err)
	}
	if _, err := CreateSharded("", infos, nil, 0); err == nil || !strings.Contains(err.Error(), "no output path") {
		t.Errorf("CreateSharded(\"\"): %v", err)
	}
}
