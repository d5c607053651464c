package config

import (
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/ini.v1"
)

// section describes one INI section as the struct tags of Config define it.
type section struct {
	name  string
	help  string
	index int // field index in Config
	// options is nil for a free-form section (a map of string to string).
	options []option
}

// option describes one option.
type option struct {
	name  string
	def   string // default, in the file's syntax
	help  string
	index int // field index in the section struct
	typ   reflect.Type
}

// schema lists Config's sections and options in declaration order.
func schema() []section {
	ct := reflect.TypeFor[Config]()
	secs := make([]section, 0, ct.NumField())
	for i := range ct.NumField() {
		f := ct.Field(i)
		s := section{name: f.Tag.Get("ini"), help: f.Tag.Get("help"), index: i}
		if f.Type.Kind() == reflect.Struct {
			for j := range f.Type.NumField() {
				o := f.Type.Field(j)
				s.options = append(s.options, option{
					name: o.Tag.Get("ini"), def: o.Tag.Get("default"), help: o.Tag.Get("help"),
					index: j, typ: o.Type,
				})
			}
		}
		secs = append(secs, s)
	}
	return secs
}

func setDefaults(c *Config) error {
	cv := reflect.ValueOf(c).Elem()
	for _, s := range schema() {
		sv := cv.Field(s.index)
		if s.options == nil {
			sv.Set(reflect.MakeMap(sv.Type()))
			continue
		}
		for _, o := range s.options {
			if err := setValue(sv.Field(o.index), o.def); err != nil {
				return &Error{File: "built-in defaults", Section: s.name, Option: o.name, Err: err}
			}
		}
	}
	return nil
}

func decode(file string, f *ini.File, c *Config) error {
	byName := map[string]section{}
	for _, s := range schema() {
		byName[s.name] = s
	}
	cv := reflect.ValueOf(c).Elem()
	for _, is := range f.Sections() {
		s, ok := byName[is.Name()]
		if !ok {
			return &Error{File: file, Section: is.Name(), Err: fmt.Errorf("%w section", ErrUnknown)}
		}
		sv := cv.Field(s.index)
		for _, k := range is.Keys() {
			if err := decodeKey(s, sv, k); err != nil {
				return &Error{File: file, Section: s.name, Option: k.Name(), Err: err}
			}
		}
	}
	return nil
}

func decodeKey(s section, sv reflect.Value, k *ini.Key) error {
	v := strings.TrimSpace(k.Value())
	if s.options == nil {
		if v == "" {
			return fmt.Errorf("empty value")
		}
		sv.SetMapIndex(reflect.ValueOf(k.Name()), reflect.ValueOf(v))
		return nil
	}
	for _, o := range s.options {
		if o.name == k.Name() {
			return setValue(sv.Field(o.index), v)
		}
	}
	return fmt.Errorf("%w option", ErrUnknown)
}

var (
	durationType     = reflect.TypeFor[time.Duration]()
	levelType        = reflect.TypeFor[slog.Level]()
	sizeType         = reflect.TypeFor[Size]()
	secretFileType   = reflect.TypeFor[SecretFile]()
	transportURLType = reflect.TypeFor[TransportURL]()
	stringsType      = reflect.TypeFor[[]string]()
)

// setValue parses s into the option field v according to its type.
func setValue(v reflect.Value, s string) error {
	var (
		x   any
		err error
	)
	switch v.Type() {
	case durationType:
		x, err = parseDuration(s)
	case levelType:
		x, err = parseLevel(s)
	case sizeType:
		x, err = parseSize(s)
	case secretFileType:
		x, err = parseSecretFile(s, os.ReadFile)
	case transportURLType:
		x, err = parseTransportURL(s)
	case stringsType:
		x = splitList(s)
	default:
		switch v.Kind() {
		case reflect.String:
			x = s
		case reflect.Bool:
			x, err = parseBool(s)
		case reflect.Int:
			var n int64
			n, err = strconv.ParseInt(s, 10, 0)
			if err != nil {
				err = fmt.Errorf("not an integer: %q", s)
			}
			x = int(n)
		default:
			return fmt.Errorf("option of unsupported type %v", v.Type())
		}
	}
	if err != nil {
		return err
	}
	v.Set(reflect.ValueOf(x))
	return nil
}

// parseDuration takes Go durations (30s, 2m, 500ms) and, as oslo options
// usually are, a bare number of seconds.
func parseDuration(s string) (time.Duration, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("not a duration (like 30s, 2m or 500ms): %q", s)
	}
	return d, nil
}

// parseBool takes the spellings oslo.config takes.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "true", "yes", "on", "1":
		return true, nil
	case "false", "no", "off", "0":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean (true or false): %q", s)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
