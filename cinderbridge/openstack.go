package cinderbridge

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/attachments"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
)

// AttachmentsMicroversion is the block-storage microversion Nova pins for
// every attachments call (nova/volume/cinder.py attachment_create,
// attachment_update, attachment_complete, attachment_delete: '3.44'); the
// bridge speaks to Cinder as Nova does, so that Cinder treats the
// destination's attachment the way it treats Nova's.
const AttachmentsMicroversion = "3.44"

// Cinder makes the block-storage calls of Method A. It wraps a gophercloud
// service client, pinned to AttachmentsMicroversion, and adds what
// gophercloud v2 lacks: the typed connector, parsed connection_info and
// os-migrate_volume_completion.
type Cinder struct{ sc *gophercloud.ServiceClient }

// NewCinder returns a Cinder using a copy of sc (a block-storage v3
// client) pinned to microversion 3.44; sc itself is not changed.
func NewCinder(sc *gophercloud.ServiceClient) *Cinder {
	c := *sc
	c.Microversion = AttachmentsMicroversion
	return &Cinder{sc: &c}
}

// Attachment is a Cinder volume attachment.
type Attachment struct {
	ID         string
	VolumeID   string
	InstanceID string
	Status     string // "reserved", "attaching", "attached", ...
	AttachMode string // "rw" or "ro"
	// Connection is the parsed connection_info (the flattened form), nil
	// while the attachment is only reserved (created without a connector).
	Connection Connection
}

func toAttachment(a *attachments.Attachment) (*Attachment, error) {
	out := &Attachment{ID: a.ID, VolumeID: a.VolumeID, InstanceID: a.Instance, Status: a.Status, AttachMode: a.AttachMode}
	if len(a.ConnectionInfo) == 0 {
		return out, nil
	}
	b, err := json.Marshal(a.ConnectionInfo)
	if err != nil {
		return nil, fmt.Errorf("attachment %s: connection_info: %w", a.ID, err)
	}
	if out.Connection, err = Parse(b); err != nil {
		return nil, fmt.Errorf("attachment %s: connection_info: %w", a.ID, err)
	}
	return out, nil
}

// connectorMap turns a Connector into the dict gophercloud sends, keeping
// every key (Extra ones included) exactly as the connector's JSON has them.
func connectorMap(c *Connector) (map[string]any, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// CreateAttachment creates an attachment of a volume to an instance. With
// a connector, Cinder exports the volume to that host at once and the
// answer carries the connection_info (POST /attachments).
func (c *Cinder) CreateAttachment(ctx context.Context, volumeID, instanceID string, conn *Connector) (*Attachment, error) {
	opts := attachments.CreateOpts{VolumeUUID: volumeID, InstanceUUID: instanceID}
	if conn != nil {
		m, err := connectorMap(conn)
		if err != nil {
			return nil, fmt.Errorf("cinder: create attachment of volume %s: connector: %w", volumeID, err)
		}
		opts.Connector = m
	}
	a, err := attachments.Create(ctx, c.sc, opts).Extract()
	if err != nil {
		return nil, fmt.Errorf("cinder: create attachment of volume %s: %w", volumeID, err)
	}
	return toAttachment(a)
}

// UpdateAttachment gives a reserved attachment its host connector; Cinder
// calls the driver's initialize_connection and answers the connection_info
// (PUT /attachments/{id}). This is the call an FC-only driver fails with
// a 400 when the connector has no wwpns.
func (c *Cinder) UpdateAttachment(ctx context.Context, attachmentID string, conn *Connector) (*Attachment, error) {
	m, err := connectorMap(conn)
	if err != nil {
		return nil, fmt.Errorf("cinder: update attachment %s: connector: %w", attachmentID, err)
	}
	a, err := attachments.Update(ctx, c.sc, attachmentID, attachments.UpdateOpts{Connector: m}).Extract()
	if err != nil {
		return nil, fmt.Errorf("cinder: update attachment %s: %w", attachmentID, err)
	}
	return toAttachment(a)
}

// CompleteAttachment marks the attachment attached (os-complete).
func (c *Cinder) CompleteAttachment(ctx context.Context, attachmentID string) error {
	if err := attachments.Complete(ctx, c.sc, attachmentID).ExtractErr(); err != nil {
		return fmt.Errorf("cinder: complete attachment %s: %w", attachmentID, err)
	}
	return nil
}

// DeleteAttachment deletes the attachment; Cinder terminates the
// connection and unexports the volume from that host.
func (c *Cinder) DeleteAttachment(ctx context.Context, attachmentID string) error {
	if err := attachments.Delete(ctx, c.sc, attachmentID).ExtractErr(); err != nil {
		return fmt.Errorf("cinder: delete attachment %s: %w", attachmentID, err)
	}
	return nil
}

// Retype changes a volume's type (os-retype). onDemand allows Cinder to
// migrate the volume when the new type lives on another backend
// (migration_policy "on-demand"); otherwise Cinder refuses such a retype
// ("never", the default).
func (c *Cinder) Retype(ctx context.Context, volumeID, newType string, onDemand bool) error {
	opts := volumes.ChangeTypeOpts{NewType: newType, MigrationPolicy: volumes.MigrationPolicyNever}
	if onDemand {
		opts.MigrationPolicy = volumes.MigrationPolicyOnDemand
	}
	if err := volumes.ChangeType(ctx, c.sc, volumeID, opts).ExtractErr(); err != nil {
		return fmt.Errorf("cinder: retype volume %s to %q: %w", volumeID, newType, err)
	}
	return nil
}

// MigrateVolumeCompletion tells Cinder that the data of volumeID now lives
// in newVolumeID (os-migrate_volume_completion, an admin action Nova calls
// at the end of a swap, nova/compute/manager.py _swap_volume). failed
// reports a failed copy. Cinder answers the id to keep.
func (c *Cinder) MigrateVolumeCompletion(ctx context.Context, volumeID, newVolumeID string, failed bool) (string, error) {
	body := map[string]any{"os-migrate_volume_completion": map[string]any{"new_volume": newVolumeID, "error": failed}}
	var out struct {
		SaveVolumeID string `json:"save_volume_id"`
	}
	_, err := c.sc.Post(ctx, c.sc.ServiceURL("volumes", volumeID, "action"), body, &out, &gophercloud.RequestOpts{OkCodes: []int{200}})
	if err != nil {
		return "", fmt.Errorf("cinder: complete migration of volume %s to %s: %w", volumeID, newVolumeID, err)
	}
	return out.SaveVolumeID, nil
}

// Nova makes the compute call of Method A that gophercloud v2 lacks: swap
// volume.
type Nova struct{ sc *gophercloud.ServiceClient }

// NewNova returns a Nova using a copy of sc (a compute v2.1 client) with
// no microversion, so that PUT os-volume_attachments always means swap
// (from 2.85 the same call also updates attachment fields).
func NewNova(sc *gophercloud.ServiceClient) *Nova {
	c := *sc
	c.Microversion = ""
	return &Nova{sc: &c}
}

// SwapVolume asks Nova to move the instance's disk from oldVolumeID to
// newVolumeID (PUT /servers/{id}/os-volume_attachments/{old}, the call
// Cinder's generic migration makes through nova.update_server_volume).
// Nova copies the data with libvirt's block copy and then calls Cinder's
// os-migrate_volume_completion itself.
func (n *Nova) SwapVolume(ctx context.Context, serverID, oldVolumeID, newVolumeID string) error {
	body := map[string]any{"volumeAttachment": map[string]any{"volumeId": newVolumeID}}
	_, err := n.sc.Put(ctx, n.sc.ServiceURL("servers", serverID, "os-volume_attachments", oldVolumeID), body, nil, &gophercloud.RequestOpts{OkCodes: []int{202}})
	if err != nil {
		return fmt.Errorf("nova: swap volume %s for %s on server %s: %w", oldVolumeID, newVolumeID, serverID, err)
	}
	return nil
}
