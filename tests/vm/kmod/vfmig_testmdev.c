// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfmig_testmdev — a mediated VFIO test device with live migration, written
 * for the vfmig project's real-kernel test tier (Linux 6.1 in-kernel API).
 *
 * A virtual platform device "vfmig_testmdev" is the mdev parent; it offers
 * two mdev types whose migration streams are mutually incompatible:
 *
 *   vfmig_testmdev-small   64 KiB of device memory
 *   vfmig_testmdev-large  256 KiB of device memory
 *
 * Each instance exposes its memory as VFIO region 0 (read/write through the
 * device fd), supports VFIO_DEVICE_RESET, implements VFIO migration v2 with
 * STOP_COPY and P2P, and has vfio-pci's device request channel: an eventfd
 * armed through SET_IRQS on VFIO_PCI_REQ_IRQ_INDEX, signalled by .request
 * when the kernel wants the device back (mdev removal while it is open).  The STOP_COPY data fd emits exactly
 *
 *   "VFMIGDEV" (8 bytes) | u32 LE stream version | type name (32 bytes,
 *   NUL padded) | u64 LE memory size | memory bytes | EOF
 *
 * and the RESUMING data fd accepts such a stream.  The stream is validated
 * when the device leaves RESUMING (magic, version <= stream_version, same
 * type, same size, exact length); a bad stream fails that transition and
 * leaves the device in ERROR until VFIO_DEVICE_RESET.
 *
 * Compatibility attributes on each mdev device:
 *   migration_version   read: "vfmig_testmdev-<type>-v<stream_version>";
 *                       write: succeeds iff a stream with that string could
 *                       be resumed here (write-and-test), else -EINVAL
 *   migration/          device_api, mdev_type, software_version,
 *                       compatible_type, compatible_software_version
 *
 * Module parameter stream_version (1..65535, default 1, writable at run
 * time through /sys/module/vfmig_testmdev/parameters/stream_version) lets
 * one boot act as an older or newer host.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/anon_inodes.h>
#include <linux/ctype.h>
#include <linux/device.h>
#include <linux/eventfd.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/kernel.h>
#include <linux/mdev.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/platform_device.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/vfio.h>
#include <linux/vmalloc.h>

#define TM_NAME			"vfmig_testmdev"
#define TM_MAGIC		"VFMIGDEV"
#define TM_MAGIC_LEN		8
#define TM_TYPE_LEN		32
#define TM_HDR_LEN		(TM_MAGIC_LEN + 4 + TM_TYPE_LEN + 8)
#define TM_MAX_INSTANCES	16
#define TM_MAX_STREAM_VERSION	65535

#define TM_REGION_SHIFT		40
#define TM_REGION_OFFSET(i)	((u64)(i) << TM_REGION_SHIFT)
#define TM_OFFSET_TO_INDEX(o)	((o) >> TM_REGION_SHIFT)
#define TM_OFFSET_MASK		(TM_REGION_OFFSET(1) - 1)

/* ---- module parameter ---------------------------------------------------- */

static unsigned int stream_version = 1;

static int tm_param_set_version(const char *val, const struct kernel_param *kp)
{
	return param_set_uint_minmax(val, kp, 1, TM_MAX_STREAM_VERSION);
}

static const struct kernel_param_ops tm_version_ops = {
	.set = tm_param_set_version,
	.get = param_get_uint,
};
module_param_cb(stream_version, &tm_version_ops, &stream_version, 0644);
MODULE_PARM_DESC(stream_version,
		 "migration stream version produced; streams up to it are accepted (1..65535, default 1)");

static u32 tm_stream_version(void)
{
	return READ_ONCE(stream_version);
}

/* ---- types --------------------------------------------------------------- */

struct tm_type {
	struct mdev_type type;
	const char *full_name;	/* "<parent driver>-<sysfs_name>", the mdev type */
	size_t mem_size;
	atomic_t instances;
};

static struct tm_type tm_types[] = {
	{
		.type.sysfs_name = "small",
		.type.pretty_name = "vfmig test device, 64 KiB",
		.full_name = TM_NAME "-small",
		.mem_size = 64 * 1024,
	},
	{
		.type.sysfs_name = "large",
		.type.pretty_name = "vfmig test device, 256 KiB",
		.full_name = TM_NAME "-large",
		.mem_size = 256 * 1024,
	},
};

static struct mdev_type *tm_mdev_types[] = {
	&tm_types[0].type,
	&tm_types[1].type,
};

static struct tm_type *to_tm_type(struct mdev_type *mtype)
{
	return container_of(mtype, struct tm_type, type);
}

/* ---- per-instance state -------------------------------------------------- */

struct tm_migf {
	struct file *filp;
	struct mutex lock;	/* protects everything below */
	bool disabled;
	u8 *buf;
	size_t cap;		/* bytes allocated in buf */
	size_t len;		/* saving: bytes in buf; resuming: bytes received */
	size_t pos;		/* saving: read position */
	size_t overflow;	/* resuming: bytes received beyond cap */
};

struct tm_state {
	struct vfio_device vdev;
	struct mdev_device *mdev;
	struct tm_type *type;
	struct mutex lock;	/* protects state, files and memory */
	enum vfio_device_mig_state mig_state;
	struct tm_migf *saving;
	struct tm_migf *resuming;
	u8 *mem;
	size_t mem_size;
	/*
	 * The device request channel (vfio-pci's VFIO_PCI_REQ_IRQ_INDEX): an
	 * eventfd the owner arms with SET_IRQS and the kernel signals through
	 * .request when it wants the device back (mdev removal).
	 */
	struct mutex req_lock;	/* protects req_trigger, req_warned */
	struct eventfd_ctx *req_trigger;
	bool req_warned;
};

static struct tm_state *to_tm(struct vfio_device *vdev)
{
	return container_of(vdev, struct tm_state, vdev);
}

/* ---- migration data files ------------------------------------------------ */

static void tm_migf_free(struct tm_migf *migf)
{
	kvfree(migf->buf);
	kfree(migf);
}

static int tm_migf_release(struct inode *inode, struct file *filp)
{
	tm_migf_free(filp->private_data);
	return 0;
}

static ssize_t tm_save_read(struct file *filp, char __user *ubuf, size_t len,
			    loff_t *ppos)
{
	struct tm_migf *migf = filp->private_data;
	ssize_t ret;
	size_t n;

	if (ppos)
		return -ESPIPE;

	mutex_lock(&migf->lock);
	if (migf->disabled) {
		ret = -ENODEV;
		goto out;
	}
	n = min(len, migf->len - migf->pos);
	if (n && copy_to_user(ubuf, migf->buf + migf->pos, n)) {
		ret = -EFAULT;
		goto out;
	}
	migf->pos += n;
	ret = n;
out:
	mutex_unlock(&migf->lock);
	return ret;
}

static ssize_t tm_resume_write(struct file *filp, const char __user *ubuf,
			       size_t len, loff_t *ppos)
{
	struct tm_migf *migf = filp->private_data;
	ssize_t ret;
	size_t n;

	if (ppos)
		return -ESPIPE;

	mutex_lock(&migf->lock);
	if (migf->disabled) {
		ret = -ENODEV;
		goto out;
	}
	/*
	 * Accept everything; bytes beyond what this device could ever take are
	 * only counted, and the stream is judged when the device leaves
	 * RESUMING.  Memory stays bounded by the device's own size.
	 */
	n = min(len, migf->cap - migf->len);
	if (n && copy_from_user(migf->buf + migf->len, ubuf, n)) {
		ret = -EFAULT;
		goto out;
	}
	migf->len += n;
	migf->overflow += len - n;
	ret = len;
out:
	mutex_unlock(&migf->lock);
	return ret;
}

static const struct file_operations tm_save_fops = {
	.owner = THIS_MODULE,
	.read = tm_save_read,
	.release = tm_migf_release,
	.llseek = no_llseek,
};

static const struct file_operations tm_resume_fops = {
	.owner = THIS_MODULE,
	.write = tm_resume_write,
	.release = tm_migf_release,
	.llseek = no_llseek,
};

static struct tm_migf *tm_migf_create(const struct file_operations *fops,
				      int flags, size_t cap)
{
	struct tm_migf *migf;
	struct file *filp;

	migf = kzalloc(sizeof(*migf), GFP_KERNEL_ACCOUNT);
	if (!migf)
		return ERR_PTR(-ENOMEM);
	mutex_init(&migf->lock);
	migf->cap = cap;
	migf->buf = kvzalloc(cap, GFP_KERNEL_ACCOUNT);
	if (!migf->buf) {
		tm_migf_free(migf);
		return ERR_PTR(-ENOMEM);
	}
	filp = anon_inode_getfile(TM_NAME "_mig", fops, migf, flags);
	if (IS_ERR(filp)) {
		tm_migf_free(migf);
		return ERR_CAST(filp);
	}
	stream_open(filp->f_inode, filp);
	migf->filp = filp;	/* our reference; from here the file owns migf */
	return migf;
}

/* Cut a data fd off from the device and drop the device's reference. */
static void tm_migf_disable(struct tm_migf *migf)
{
	struct file *filp = migf->filp;

	mutex_lock(&migf->lock);
	migf->disabled = true;
	mutex_unlock(&migf->lock);
	fput(filp);	/* may free migf */
}

static void tm_disable_fds(struct tm_state *tm)
{
	if (tm->saving) {
		tm_migf_disable(tm->saving);
		tm->saving = NULL;
	}
	if (tm->resuming) {
		tm_migf_disable(tm->resuming);
		tm->resuming = NULL;
	}
}

static void tm_put_le32(u8 *p, u32 v)
{
	__le32 le = cpu_to_le32(v);

	memcpy(p, &le, sizeof(le));
}

static void tm_put_le64(u8 *p, u64 v)
{
	__le64 le = cpu_to_le64(v);

	memcpy(p, &le, sizeof(le));
}

static u32 tm_get_le32(const u8 *p)
{
	__le32 le;

	memcpy(&le, p, sizeof(le));
	return le32_to_cpu(le);
}

static u64 tm_get_le64(const u8 *p)
{
	__le64 le;

	memcpy(&le, p, sizeof(le));
	return le64_to_cpu(le);
}

/* STOP -> STOP_COPY: snapshot header + memory into a read-only data fd. */
static struct file *tm_start_saving(struct tm_state *tm)
{
	struct tm_migf *migf;
	u8 *p;

	migf = tm_migf_create(&tm_save_fops, O_RDONLY, TM_HDR_LEN + tm->mem_size);
	if (IS_ERR(migf))
		return ERR_CAST(migf);

	p = migf->buf;
	memcpy(p, TM_MAGIC, TM_MAGIC_LEN);
	p += TM_MAGIC_LEN;
	tm_put_le32(p, tm_stream_version());
	p += 4;
	strscpy_pad(p, tm->type->full_name, TM_TYPE_LEN);
	p += TM_TYPE_LEN;
	tm_put_le64(p, tm->mem_size);
	p += 8;
	memcpy(p, tm->mem, tm->mem_size);
	migf->len = TM_HDR_LEN + tm->mem_size;

	get_file(migf->filp);	/* one for the caller's fd, one kept */
	tm->saving = migf;
	return migf->filp;
}

/* STOP -> RESUMING: a write-only data fd sized for this device. */
static struct file *tm_start_resuming(struct tm_state *tm)
{
	struct tm_migf *migf;

	migf = tm_migf_create(&tm_resume_fops, O_WRONLY, TM_HDR_LEN + tm->mem_size);
	if (IS_ERR(migf))
		return ERR_CAST(migf);
	get_file(migf->filp);
	tm->resuming = migf;
	return migf->filp;
}

/*
 * Check a received stream against this device; on success copy the memory
 * in.  Returns 0 or -EINVAL with the reason logged.
 */
static int tm_load_stream(struct tm_state *tm, struct tm_migf *migf)
{
	struct device *dev = mdev_dev(tm->mdev);
	const u8 *p = migf->buf;
	char type[TM_TYPE_LEN + 1];
	u32 version;
	u64 size;
	int ret = -EINVAL;

	mutex_lock(&migf->lock);
	if (migf->len < TM_HDR_LEN) {
		dev_info(dev, "resume rejected: short stream (%zu bytes, header is %u)\n",
			 migf->len, TM_HDR_LEN);
		goto out;
	}
	if (memcmp(p, TM_MAGIC, TM_MAGIC_LEN)) {
		dev_info(dev, "resume rejected: bad magic\n");
		goto out;
	}
	version = tm_get_le32(p + TM_MAGIC_LEN);
	if (version == 0 || version > tm_stream_version()) {
		dev_info(dev, "resume rejected: stream version %u, this host accepts 1..%u\n",
			 version, tm_stream_version());
		goto out;
	}
	memcpy(type, p + TM_MAGIC_LEN + 4, TM_TYPE_LEN);
	type[TM_TYPE_LEN] = '\0';
	if (strcmp(type, tm->type->full_name)) {
		dev_info(dev, "resume rejected: stream type '%s', device type '%s'\n",
			 type, tm->type->full_name);
		goto out;
	}
	size = tm_get_le64(p + TM_MAGIC_LEN + 4 + TM_TYPE_LEN);
	if (size != tm->mem_size) {
		dev_info(dev, "resume rejected: stream memory size %llu, device has %zu\n",
			 size, tm->mem_size);
		goto out;
	}
	if (migf->len != TM_HDR_LEN + tm->mem_size || migf->overflow) {
		dev_info(dev, "resume rejected: stream length %zu, expected %zu\n",
			 migf->len + migf->overflow, TM_HDR_LEN + tm->mem_size);
		goto out;
	}
	memcpy(tm->mem, p + TM_HDR_LEN, tm->mem_size);
	ret = 0;
out:
	mutex_unlock(&migf->lock);
	return ret;
}

/* One arc of the state machine, as handed out by vfio_mig_get_next_state. */
static struct file *tm_step(struct tm_state *tm,
			    enum vfio_device_mig_state next)
{
	enum vfio_device_mig_state cur = tm->mig_state;
	int ret;

	if (cur == VFIO_DEVICE_STATE_STOP && next == VFIO_DEVICE_STATE_STOP_COPY)
		return tm_start_saving(tm);

	if (cur == VFIO_DEVICE_STATE_STOP_COPY && next == VFIO_DEVICE_STATE_STOP) {
		tm_disable_fds(tm);
		return NULL;
	}

	if (cur == VFIO_DEVICE_STATE_STOP && next == VFIO_DEVICE_STATE_RESUMING)
		return tm_start_resuming(tm);

	if (cur == VFIO_DEVICE_STATE_RESUMING && next == VFIO_DEVICE_STATE_STOP) {
		ret = tm_load_stream(tm, tm->resuming);
		tm_disable_fds(tm);
		if (ret) {
			tm->mig_state = VFIO_DEVICE_STATE_ERROR;
			return ERR_PTR(ret);
		}
		return NULL;
	}

	/* The device does no DMA and raises no interrupts: nothing to quiesce. */
	if ((cur == VFIO_DEVICE_STATE_RUNNING && next == VFIO_DEVICE_STATE_RUNNING_P2P) ||
	    (cur == VFIO_DEVICE_STATE_RUNNING_P2P && next == VFIO_DEVICE_STATE_RUNNING) ||
	    (cur == VFIO_DEVICE_STATE_RUNNING_P2P && next == VFIO_DEVICE_STATE_STOP) ||
	    (cur == VFIO_DEVICE_STATE_STOP && next == VFIO_DEVICE_STATE_RUNNING_P2P) ||
	    (cur == VFIO_DEVICE_STATE_RUNNING && next == VFIO_DEVICE_STATE_STOP) ||
	    (cur == VFIO_DEVICE_STATE_STOP && next == VFIO_DEVICE_STATE_RUNNING))
		return NULL;

	return ERR_PTR(-EINVAL);
}

static struct file *tm_set_state(struct vfio_device *vdev,
				 enum vfio_device_mig_state new_state)
{
	struct tm_state *tm = to_tm(vdev);
	enum vfio_device_mig_state next;
	struct file *res = NULL;
	int ret;

	mutex_lock(&tm->lock);
	/*
	 * ERROR is left only through VFIO_DEVICE_RESET; ERROR -> ERROR is the
	 * usual "already there" no-op.  (ERROR must not be fed to
	 * vfio_mig_get_next_state() as the current state: it WARNs on that.)
	 */
	if (tm->mig_state == VFIO_DEVICE_STATE_ERROR) {
		if (new_state != VFIO_DEVICE_STATE_ERROR)
			res = ERR_PTR(-EINVAL);
		goto out;
	}
	while (tm->mig_state != new_state) {
		ret = vfio_mig_get_next_state(vdev, tm->mig_state, new_state, &next);
		if (ret) {
			res = ERR_PTR(ret);
			break;
		}
		res = tm_step(tm, next);
		if (IS_ERR(res))
			break;
		tm->mig_state = next;
		if (res && next != new_state) {
			/* data fds only come from final states; never expected */
			fput(res);
			res = ERR_PTR(-EINVAL);
			break;
		}
	}
out:
	mutex_unlock(&tm->lock);
	return res;
}

static int tm_get_state(struct vfio_device *vdev,
			enum vfio_device_mig_state *cur)
{
	struct tm_state *tm = to_tm(vdev);

	mutex_lock(&tm->lock);
	*cur = tm->mig_state;
	mutex_unlock(&tm->lock);
	return 0;
}

static const struct vfio_migration_ops tm_mig_ops = {
	.migration_set_state = tm_set_state,
	.migration_get_state = tm_get_state,
};

/* ---- vfio device ops ----------------------------------------------------- */

static int tm_init_dev(struct vfio_device *vdev)
{
	struct tm_state *tm = to_tm(vdev);
	struct mdev_device *mdev = to_mdev_device(vdev->dev);
	struct tm_type *type = to_tm_type(mdev->type);

	if (atomic_inc_return(&type->instances) > TM_MAX_INSTANCES) {
		atomic_dec(&type->instances);
		return -ENOSPC;
	}
	tm->mem = kvzalloc(type->mem_size, GFP_KERNEL_ACCOUNT);
	if (!tm->mem) {
		atomic_dec(&type->instances);
		return -ENOMEM;
	}
	tm->mdev = mdev;
	tm->type = type;
	tm->mem_size = type->mem_size;
	mutex_init(&tm->lock);
	mutex_init(&tm->req_lock);
	tm->mig_state = VFIO_DEVICE_STATE_RUNNING;
	vdev->migration_flags = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P;
	vdev->mig_ops = &tm_mig_ops;
	return 0;
}

static void tm_release_dev(struct vfio_device *vdev)
{
	struct tm_state *tm = to_tm(vdev);

	kvfree(tm->mem);
	if (tm->req_trigger)	/* close_device dropped it; never expected */
		eventfd_ctx_put(tm->req_trigger);
	mutex_destroy(&tm->req_lock);
	mutex_destroy(&tm->lock);
	atomic_dec(&tm->type->instances);
	vfio_free_device(vdev);
}

static int tm_open_device(struct vfio_device *vdev)
{
	struct tm_state *tm = to_tm(vdev);

	mutex_lock(&tm->lock);
	tm->mig_state = VFIO_DEVICE_STATE_RUNNING;
	mutex_unlock(&tm->lock);
	return 0;
}

static void tm_req_disarm(struct tm_state *tm)
{
	mutex_lock(&tm->req_lock);
	if (tm->req_trigger) {
		eventfd_ctx_put(tm->req_trigger);
		tm->req_trigger = NULL;
	}
	mutex_unlock(&tm->req_lock);
}

static void tm_close_device(struct vfio_device *vdev)
{
	struct tm_state *tm = to_tm(vdev);

	tm_req_disarm(tm);
	mutex_lock(&tm->lock);
	tm_disable_fds(tm);
	tm->mig_state = VFIO_DEVICE_STATE_RUNNING;
	mutex_unlock(&tm->lock);
}

/*
 * The kernel wants the device back (6.1: vfio_unregister_group_dev() calls
 * this, count = 0, 1, ..., every 10 s until the last fd is closed).  Tell
 * the owner through its request eventfd, as vfio-pci does.
 */
static void tm_request(struct vfio_device *vdev, unsigned int count)
{
	struct tm_state *tm = to_tm(vdev);
	struct device *dev = mdev_dev(tm->mdev);

	mutex_lock(&tm->req_lock);
	if (tm->req_trigger) {
		eventfd_signal(tm->req_trigger, 1);
	} else if (!tm->req_warned) {
		tm->req_warned = true;
		dev_notice(dev, "removal requested but no request eventfd armed; waiting for the user to close the device\n");
	}
	mutex_unlock(&tm->req_lock);
}

/*
 * VFIO_DEVICE_SET_IRQS on VFIO_PCI_REQ_IRQ_INDEX, with vfio-pci's semantics
 * (vfio_pci_set_ctx_trigger_single): ACTION_TRIGGER only; DATA_EVENTFD arms
 * (fd >= 0) or disarms (fd == -1); DATA_NONE with count 1 (or DATA_BOOL true)
 * signals the armed eventfd, a loopback test; DATA_NONE with count 0
 * disarms.  DATA_NONE without an armed eventfd is EINVAL, as there.
 */
static int tm_set_req_trigger(struct tm_state *tm, struct vfio_irq_set *hdr,
			      const void *data)
{
	struct eventfd_ctx *ctx;
	int ret = 0;
	s32 fd;

	if (hdr->start != 0 || hdr->count > 1 ||
	    (hdr->flags & VFIO_IRQ_SET_ACTION_TYPE_MASK) != VFIO_IRQ_SET_ACTION_TRIGGER)
		return -EINVAL;

	mutex_lock(&tm->req_lock);
	switch (hdr->flags & VFIO_IRQ_SET_DATA_TYPE_MASK) {
	case VFIO_IRQ_SET_DATA_NONE:
		if (!tm->req_trigger) {
			ret = -EINVAL;
		} else if (hdr->count) {
			eventfd_signal(tm->req_trigger, 1);
		} else {
			eventfd_ctx_put(tm->req_trigger);
			tm->req_trigger = NULL;
		}
		break;
	case VFIO_IRQ_SET_DATA_BOOL:
		if (!hdr->count)
			ret = -EINVAL;
		else if (*(const u8 *)data && tm->req_trigger)
			eventfd_signal(tm->req_trigger, 1);
		break;
	case VFIO_IRQ_SET_DATA_EVENTFD:
		if (!hdr->count) {
			ret = -EINVAL;
			break;
		}
		fd = *(const s32 *)data;
		if (fd == -1) {
			if (tm->req_trigger)
				eventfd_ctx_put(tm->req_trigger);
			tm->req_trigger = NULL;
		} else if (fd >= 0) {
			ctx = eventfd_ctx_fdget(fd);
			if (IS_ERR(ctx)) {
				ret = PTR_ERR(ctx);
				break;
			}
			if (tm->req_trigger)
				eventfd_ctx_put(tm->req_trigger);
			tm->req_trigger = ctx;
			tm->req_warned = false;
		} else {
			ret = -EINVAL;
		}
		break;
	default:
		ret = -EINVAL;
	}
	mutex_unlock(&tm->req_lock);
	return ret;
}

static int tm_set_irqs(struct tm_state *tm, void __user *uarg)
{
	struct vfio_irq_set hdr;
	unsigned long minsz = offsetofend(struct vfio_irq_set, count);
	size_t data_size = 0;
	u8 *data = NULL;
	int ret;

	if (copy_from_user(&hdr, uarg, minsz))
		return -EFAULT;
	/* Only the request index has an IRQ (count 1); the others have none. */
	ret = vfio_set_irqs_validate_and_prepare(&hdr,
			hdr.index == VFIO_PCI_REQ_IRQ_INDEX ? 1 : 0,
			VFIO_PCI_NUM_IRQS, &data_size);
	if (ret)
		return ret;
	if (data_size) {
		data = memdup_user(uarg + minsz, data_size);
		if (IS_ERR(data))
			return PTR_ERR(data);
	}
	ret = tm_set_req_trigger(tm, &hdr, data);
	kfree(data);
	return ret;
}

static ssize_t tm_rw(struct tm_state *tm, char __user *ubuf, size_t count,
		     loff_t *ppos, bool is_write)
{
	u64 index = TM_OFFSET_TO_INDEX((u64)*ppos);
	u64 off = (u64)*ppos & TM_OFFSET_MASK;
	ssize_t ret;

	if (*ppos < 0 || index != 0)
		return -EINVAL;
	if (off >= tm->mem_size)
		return 0;
	count = min_t(u64, count, tm->mem_size - off);

	mutex_lock(&tm->lock);
	if (is_write)
		ret = copy_from_user(tm->mem + off, (const char __user *)ubuf, count);
	else
		ret = copy_to_user(ubuf, tm->mem + off, count);
	mutex_unlock(&tm->lock);
	if (ret)
		return -EFAULT;
	*ppos += count;
	return count;
}

static ssize_t tm_read(struct vfio_device *vdev, char __user *buf,
		       size_t count, loff_t *ppos)
{
	return tm_rw(to_tm(vdev), buf, count, ppos, false);
}

static ssize_t tm_write(struct vfio_device *vdev, const char __user *buf,
			size_t count, loff_t *ppos)
{
	return tm_rw(to_tm(vdev), (char __user *)buf, count, ppos, true);
}

static void tm_reset(struct tm_state *tm)
{
	mutex_lock(&tm->lock);
	tm_disable_fds(tm);
	tm->mig_state = VFIO_DEVICE_STATE_RUNNING;
	memset(tm->mem, 0, tm->mem_size);
	mutex_unlock(&tm->lock);
}

static long tm_ioctl(struct vfio_device *vdev, unsigned int cmd,
		     unsigned long arg)
{
	struct tm_state *tm = to_tm(vdev);
	void __user *uarg = (void __user *)arg;
	unsigned long minsz;

	switch (cmd) {
	case VFIO_DEVICE_GET_INFO: {
		struct vfio_device_info info;

		minsz = offsetofend(struct vfio_device_info, num_irqs);
		if (copy_from_user(&info, uarg, minsz))
			return -EFAULT;
		if (info.argsz < minsz)
			return -EINVAL;
		info.flags = VFIO_DEVICE_FLAGS_PLATFORM | VFIO_DEVICE_FLAGS_RESET;
		info.num_regions = 1;
		/* IRQ indexes as vfio-pci numbers them; only REQ has an IRQ. */
		info.num_irqs = VFIO_PCI_NUM_IRQS;
		return copy_to_user(uarg, &info, minsz) ? -EFAULT : 0;
	}
	case VFIO_DEVICE_GET_REGION_INFO: {
		struct vfio_region_info info;

		minsz = offsetofend(struct vfio_region_info, offset);
		if (copy_from_user(&info, uarg, minsz))
			return -EFAULT;
		if (info.argsz < minsz)
			return -EINVAL;
		if (info.index != 0)
			return -EINVAL;
		info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
		info.cap_offset = 0;
		info.size = tm->mem_size;
		info.offset = TM_REGION_OFFSET(0);
		return copy_to_user(uarg, &info, minsz) ? -EFAULT : 0;
	}
	case VFIO_DEVICE_GET_IRQ_INFO: {
		struct vfio_irq_info info;

		minsz = offsetofend(struct vfio_irq_info, count);
		if (copy_from_user(&info, uarg, minsz))
			return -EFAULT;
		if (info.argsz < minsz || info.index >= VFIO_PCI_NUM_IRQS)
			return -EINVAL;
		info.flags = VFIO_IRQ_INFO_EVENTFD;
		info.count = info.index == VFIO_PCI_REQ_IRQ_INDEX ? 1 : 0;
		return copy_to_user(uarg, &info, minsz) ? -EFAULT : 0;
	}
	case VFIO_DEVICE_SET_IRQS:
		return tm_set_irqs(tm, uarg);
	case VFIO_DEVICE_RESET:
		tm_reset(tm);
		return 0;
	}
	return -ENOTTY;
}

static const struct vfio_device_ops tm_dev_ops = {
	.name = "vfio-" TM_NAME,
	.init = tm_init_dev,
	.release = tm_release_dev,
	.open_device = tm_open_device,
	.close_device = tm_close_device,
	.read = tm_read,
	.write = tm_write,
	.ioctl = tm_ioctl,
	.request = tm_request,
};

/* ---- compatibility attributes on the mdev device ------------------------- */

static struct tm_type *tm_dev_type(struct device *dev)
{
	return to_tm_type(to_mdev_device(dev)->type);
}

static ssize_t migration_version_show(struct device *dev,
				      struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%s-v%u\n", tm_dev_type(dev)->full_name,
			  tm_stream_version());
}

/* Write-and-test: accept iff a stream described by the string resumes here. */
static ssize_t migration_version_store(struct device *dev,
				       struct device_attribute *attr,
				       const char *buf, size_t count)
{
	const char *name = tm_dev_type(dev)->full_name;
	size_t nlen = strlen(name);
	unsigned int version;
	char *s, *v;
	int ret = -EINVAL;

	s = kstrndup(buf, count, GFP_KERNEL);
	if (!s)
		return -ENOMEM;
	strim(s);
	if (strncmp(s, name, nlen) || strncmp(s + nlen, "-v", 2))
		goto out;
	v = s + nlen + 2;
	if (!isdigit(*v) || kstrtouint(v, 10, &version))
		goto out;
	if (version < 1 || version > tm_stream_version())
		goto out;
	ret = count;
out:
	kfree(s);
	return ret;
}
static DEVICE_ATTR_RW(migration_version);

static struct attribute *tm_dev_attrs[] = {
	&dev_attr_migration_version.attr,
	NULL,
};

static const struct attribute_group tm_dev_group = {
	.attrs = tm_dev_attrs,
};

static ssize_t device_api_show(struct device *dev,
			       struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%s\n", VFIO_DEVICE_API_PLATFORM_STRING);
}
static DEVICE_ATTR_RO(device_api);

static ssize_t mdev_type_show(struct device *dev,
			      struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%s\n", tm_dev_type(dev)->full_name);
}
static DEVICE_ATTR_RO(mdev_type);

static ssize_t software_version_show(struct device *dev,
				     struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%u\n", tm_stream_version());
}
static DEVICE_ATTR_RO(software_version);

static ssize_t compatible_type_show(struct device *dev,
				    struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%s\n", tm_dev_type(dev)->full_name);
}
static DEVICE_ATTR_RO(compatible_type);

static ssize_t compatible_software_version_show(struct device *dev,
						struct device_attribute *attr,
						char *buf)
{
	return sysfs_emit(buf, "1-%u\n", tm_stream_version());
}
static DEVICE_ATTR_RO(compatible_software_version);

static struct attribute *tm_migration_attrs[] = {
	&dev_attr_device_api.attr,
	&dev_attr_mdev_type.attr,
	&dev_attr_software_version.attr,
	&dev_attr_compatible_type.attr,
	&dev_attr_compatible_software_version.attr,
	NULL,
};

static const struct attribute_group tm_migration_group = {
	.name = "migration",
	.attrs = tm_migration_attrs,
};

static const struct attribute_group *tm_dev_groups[] = {
	&tm_dev_group,
	&tm_migration_group,
	NULL,
};

/* ---- mdev driver ---------------------------------------------------------- */

static int tm_probe(struct mdev_device *mdev)
{
	struct tm_state *tm;
	int ret;

	tm = vfio_alloc_device(tm_state, vdev, &mdev->dev, &tm_dev_ops);
	if (IS_ERR(tm))
		return PTR_ERR(tm);
	ret = vfio_register_emulated_iommu_dev(&tm->vdev);
	if (ret) {
		vfio_put_device(&tm->vdev);
		return ret;
	}
	dev_set_drvdata(&mdev->dev, tm);
	return 0;
}

static void tm_remove(struct mdev_device *mdev)
{
	struct tm_state *tm = dev_get_drvdata(&mdev->dev);

	vfio_unregister_group_dev(&tm->vdev);
	vfio_put_device(&tm->vdev);
}

static unsigned int tm_get_available(struct mdev_type *mtype)
{
	int used = atomic_read(&to_tm_type(mtype)->instances);

	return used >= TM_MAX_INSTANCES ? 0 : TM_MAX_INSTANCES - used;
}

static ssize_t tm_show_description(struct mdev_type *mtype, char *buf)
{
	struct tm_type *type = to_tm_type(mtype);

	return sysfs_emit(buf, "vfmig test device, %zu KiB memory, migration stream v%u\n",
			  type->mem_size / 1024, tm_stream_version());
}

static struct mdev_driver tm_mdev_driver = {
	.device_api = VFIO_DEVICE_API_PLATFORM_STRING,
	.driver = {
		.name = TM_NAME,
		.owner = THIS_MODULE,
		.mod_name = KBUILD_MODNAME,
		.dev_groups = tm_dev_groups,
	},
	.probe = tm_probe,
	.remove = tm_remove,
	.get_available = tm_get_available,
	.show_description = tm_show_description,
};

/* ---- the virtual parent: a platform device bound to our platform driver -- */

static struct mdev_parent tm_parent;
static struct platform_device *tm_pdev;

static int tm_pdev_probe(struct platform_device *pdev)
{
	/*
	 * The type directories are named "<parent's driver>-<sysfs_name>", so
	 * being bound to a driver called vfmig_testmdev gives the types their
	 * names.
	 */
	return mdev_register_parent(&tm_parent, &pdev->dev, &tm_mdev_driver,
				    tm_mdev_types, ARRAY_SIZE(tm_mdev_types));
}

static int tm_pdev_remove(struct platform_device *pdev)
{
	mdev_unregister_parent(&tm_parent);
	return 0;
}

/*
 * The parent's migration/software_version: what an instance created now
 * would report (for creatable types; the instances have their own).
 */
static ssize_t parent_software_version_show(struct device *dev,
					    struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%u\n", tm_stream_version());
}
static struct device_attribute dev_attr_parent_software_version =
	__ATTR(software_version, 0444, parent_software_version_show, NULL);

static struct attribute *tm_parent_migration_attrs[] = {
	&dev_attr_parent_software_version.attr,
	NULL,
};

static const struct attribute_group tm_parent_migration_group = {
	.name = "migration",
	.attrs = tm_parent_migration_attrs,
};

static const struct attribute_group *tm_parent_groups[] = {
	&tm_parent_migration_group,
	NULL,
};

static struct platform_driver tm_pdrv = {
	.driver = {
		.name = TM_NAME,
		.dev_groups = tm_parent_groups,
		/*
		 * No unbind/bind from sysfs: the static mdev types cannot be
		 * registered twice in one module lifetime.
		 */
		.suppress_bind_attrs = true,
	},
	.probe = tm_pdev_probe,
	.remove = tm_pdev_remove,
};

static int __init tm_init(void)
{
	int ret;

	ret = mdev_register_driver(&tm_mdev_driver);
	if (ret)
		return ret;
	ret = platform_driver_register(&tm_pdrv);
	if (ret)
		goto err_mdev;
	tm_pdev = platform_device_register_simple(TM_NAME, PLATFORM_DEVID_NONE,
						  NULL, 0);
	if (IS_ERR(tm_pdev)) {
		ret = PTR_ERR(tm_pdev);
		goto err_pdrv;
	}
	if (!tm_pdev->dev.driver) {
		/* the parent did not come up (probe failed) */
		ret = -ENODEV;
		goto err_pdev;
	}
	pr_info("loaded, stream version %u\n", tm_stream_version());
	return 0;

err_pdev:
	platform_device_unregister(tm_pdev);
err_pdrv:
	platform_driver_unregister(&tm_pdrv);
err_mdev:
	mdev_unregister_driver(&tm_mdev_driver);
	return ret;
}

static void __exit tm_exit(void)
{
	platform_device_unregister(tm_pdev);
	platform_driver_unregister(&tm_pdrv);
	mdev_unregister_driver(&tm_mdev_driver);
	pr_info("unloaded\n");
}

module_init(tm_init);
module_exit(tm_exit);

MODULE_LICENSE("GPL v2");
MODULE_DESCRIPTION("vfmig test mdev device with VFIO live migration");
MODULE_AUTHOR("vfmig developers");
MODULE_SOFTDEP("pre: vfio mdev");
