// Package domainxml edits libvirt domain XML in place: it finds the
// /domain/devices/disk elements and replaces parts of them while every
// other byte of the document stays as it was. Hooks and agents hand the
// result back to libvirt, which must get exactly the domain it gave,
// except for the disks they mean to change; a round trip through Go
// structs would drop whatever the structs do not know.
package domainxml

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Span is a byte range [Start, End) of a document.
type Span struct{ Start, End int64 }

// Disk is what Disks learns about one /domain/devices/disk element.
type Disk struct {
	Tag            Span // the start tag
	Type           string
	Device         string
	TargetDev      string
	Serial         string // the text of <serial>, untrimmed
	HasSerial      bool
	SourceDev      string // <source dev>
	SourceFile     string // <source file>
	SourceProtocol string // <source protocol>
	SourceName     string // <source name>
	Source         Span   // the <source> element, when HasSource
	HasSource      bool
	Indent         string // white space before the disk's start tag, after its last newline
	SourceIndent   string // likewise before <source>
	SourcePretty   bool   // the source element starts a line of its own
	Auths          []Span // disk-level <auth> (the pre-3.9 placement), with the white space before it
}

// Disks walks the document once with encoding/xml, which also checks
// that it is well formed, and returns its /domain/devices/disk elements
// in document order.
func Disks(domain []byte) ([]Disk, error) {
	dec := xml.NewDecoder(bytes.NewReader(domain))
	var (
		stack    []string
		out      []Disk
		cur      *Disk
		child    string // name of the disk's child being read
		childAt  int64
		lastWS   Span // the last character data, if it was only white space
		inSerial bool
	)
	for {
		start := dec.InputOffset()
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("domain XML: %w", err)
		}
		end := dec.InputOffset()
		switch t := tok.(type) {
		case xml.StartElement:
			stack = append(stack, t.Name.Local)
			ws := Span{start, start}
			if lastWS.End == start {
				ws = lastWS
			}
			switch {
			case len(stack) == 3 && t.Name.Space == "" && stack[0] == "domain" && stack[1] == "devices" && stack[2] == "disk":
				cur = &Disk{Tag: Span{start, end}, Type: attr(t, "type"), Device: attr(t, "device"), Indent: indentOf(domain[ws.Start:ws.End])}
			case cur != nil && len(stack) == 4:
				child, childAt = t.Name.Local, start
				if t.Name.Space != "" {
					child = ""
				}
				switch child {
				case "source":
					cur.SourceDev, cur.SourceFile = attr(t, "dev"), attr(t, "file")
					cur.SourceProtocol, cur.SourceName = attr(t, "protocol"), attr(t, "name")
					cur.SourceIndent = indentOf(domain[ws.Start:ws.End])
					cur.SourcePretty = bytes.ContainsAny(domain[ws.Start:ws.End], "\n")
				case "serial":
					cur.HasSerial, inSerial = true, true
				case "target":
					cur.TargetDev = attr(t, "dev")
				case "auth":
					childAt = ws.Start
				}
			}
		case xml.EndElement:
			if cur != nil && len(stack) == 4 {
				switch child {
				case "source":
					cur.Source, cur.HasSource = Span{childAt, end}, true
				case "auth":
					cur.Auths = append(cur.Auths, Span{childAt, end})
				}
				child, inSerial = "", false
			}
			if cur != nil && len(stack) == 3 {
				out = append(out, *cur)
				cur = nil
			}
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if inSerial && len(stack) == 4 {
				cur.Serial += string(t)
			}
			if len(bytes.TrimSpace(t)) == 0 {
				lastWS = Span{start, end}
			}
		}
	}
	return out, nil
}

// Edit replaces the bytes of Span with Text (nil deletes them).
type Edit struct {
	Span
	Text []byte
}

// Apply returns domain with the edits made. The edits' spans must not
// overlap; their order does not matter.
func Apply(domain []byte, edits []Edit) []byte {
	edits = slices.Clone(edits)
	slices.SortFunc(edits, func(a, b Edit) int { return int(a.Start - b.Start) })
	var out bytes.Buffer
	var at int64
	for _, e := range edits {
		out.Write(domain[at:e.Start])
		out.Write(e.Text)
		at = e.End
	}
	out.Write(domain[at:])
	return out.Bytes()
}

func attr(t xml.StartElement, name string) string {
	for _, a := range t.Attr {
		if a.Name.Space == "" && a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// indentOf returns the white space after the last newline of ws.
func indentOf(ws []byte) string {
	if i := bytes.LastIndexByte(ws, '\n'); i >= 0 {
		ws = ws[i+1:]
	}
	return string(bytes.TrimLeft(ws, "\r"))
}

// SetAttr rewrites the value of one unprefixed attribute in a raw start
// tag (already checked well formed by the decoder), keeping every other
// byte, the quoting and the attribute order.
func SetAttr(tag []byte, name, value string) ([]byte, error) {
	i := 1 // after '<'
	for i < len(tag) && !isXMLSpace(tag[i]) && tag[i] != '>' && tag[i] != '/' {
		i++
	}
	for i < len(tag) {
		for i < len(tag) && isXMLSpace(tag[i]) {
			i++
		}
		if i >= len(tag) || tag[i] == '>' || tag[i] == '/' {
			break
		}
		nameStart := i
		for i < len(tag) && tag[i] != '=' && !isXMLSpace(tag[i]) {
			i++
		}
		attrName := string(tag[nameStart:i])
		for i < len(tag) && (isXMLSpace(tag[i]) || tag[i] == '=') {
			i++
		}
		if i >= len(tag) {
			break
		}
		q := tag[i]
		valStart := i + 1
		valEnd := bytes.IndexByte(tag[valStart:], q)
		if valEnd < 0 {
			break
		}
		valEnd += valStart
		if attrName == name {
			var b bytes.Buffer
			b.Write(tag[:valStart])
			b.WriteString(EscapeAttr(value))
			b.Write(tag[valEnd:])
			return b.Bytes(), nil
		}
		i = valEnd + 1
	}
	return nil, fmt.Errorf("start tag %q has no %s attribute", tag, name)
}

func isXMLSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// QuoteOf returns the quote character the tag's first attribute uses, so
// that new elements quote the way the document does; libvirt writes
// single quotes.
func QuoteOf(tag []byte) byte {
	if i := bytes.IndexAny(tag, `'"`); i >= 0 {
		return tag[i]
	}
	return '\''
}

// EscapeAttr escapes s for an attribute value or character data.
func EscapeAttr(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s)) // writes to a strings.Builder cannot fail
	return b.String()
}
