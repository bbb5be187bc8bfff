package chaos

import (
	"os"
	"testing"

	"github.com/cairnkv/cairn/integration/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
